"""Helpers of the PancreasAI Slicer module: engine process, scene I/O, result import and export.

Nothing here holds model code; the engine (PancreasAILib) runs in a separate process.
"""
