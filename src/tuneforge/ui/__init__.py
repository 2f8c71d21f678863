"""`tuneforge ui`: a local dashboard over a directory of runs.

readers.py and runs.py read run directories into plain dataclasses (a broken run never raises:
it gets a note), compare.py reads `tuneforge compare` summaries and builds run comparisons,
evalview.py renders a run's eval report, charts.py draws inline SVG, playground.py talks to the
serve API, and app.py serves the pages (templates.py, assets.py) with FastAPI.
"""
