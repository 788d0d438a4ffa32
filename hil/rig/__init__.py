"""The rig: measures a box from outside, through its audio ports and its protocol only.

* :mod:`hil.rig.signals`: what it plays (sine, noise, MLS, log sweep, impulse).
* :mod:`hil.rig.analysis`: what it reads off the recordings (pure numpy/scipy).
* :mod:`hil.rig.results`: the figures of one run, as the runner fills them in.
* :mod:`hil.rig.report`: ``report.json`` and ``report.html`` with plots; comparing two runs.
"""
