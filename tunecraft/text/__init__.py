"""tunecraft.text"""
