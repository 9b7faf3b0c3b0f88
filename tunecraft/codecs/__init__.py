"""tunecraft.codecs"""
