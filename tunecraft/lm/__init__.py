"""tunecraft.lm"""
