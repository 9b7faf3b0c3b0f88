"""tunecraft.modules"""
