"""tunecraft.diffusion"""
