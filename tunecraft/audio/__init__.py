"""tunecraft.audio"""
