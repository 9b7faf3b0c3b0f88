"""tunecraft.app"""
