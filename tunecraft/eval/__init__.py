"""tunecraft.eval"""
