"""tunecraft.data"""
