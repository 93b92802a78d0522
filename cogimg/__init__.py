"""cogimg: deep-learning brain MRI analysis of cognitive impairment (stroke, AD, PD).

Layers (imports point downward only): ``cli`` → ``tracking`` → ``paradigms`` → ``tasks``
→ ``models`` / ``metrics`` → ``data`` (+ ``diseases``). See README.md for a tour.
"""

__version__ = "0.1.0"
