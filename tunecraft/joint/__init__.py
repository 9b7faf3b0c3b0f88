"""tunecraft.joint"""
