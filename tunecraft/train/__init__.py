"""tunecraft.train"""
