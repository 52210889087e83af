"""PancreasAI engine: plain Python, never imports Slicer.

Research use only, not for clinical use.
"""

__version__ = "0.2.0"
