"""The rig: measures a box from outside, through its audio ports and its protocol only.

* :mod:`hil.rig.signals`: what it plays (sine, noise, MLS, log sweep, impulse).
* :mod:`hil.rig.analysis`: what it reads off the recordings (pure numpy/scipy).
* :mod:`hil.rig.results`: the figures of one run, as the runner fills them in.
* :mod:`hil.rig.report`: ``report.json`` and ``report.html`` with plots; comparing two runs.
* :mod:`hil.rig.setups`: how the rig reaches a box: its URL and token (``Box``) and the
  rig's audio wired to it (a virtual box here, or a rig computer's audio interface).
* :mod:`hil.rig.calibration`: the rig's interface measured with a loopback cable.
* :mod:`hil.rig.clients`: the rig's JACK clients, in a child process of their own
  (``tests.rig.Rig`` and ``MockInterface`` drive it).
* :mod:`hil.rig.runner`: the measurements, the same for a virtual and a real box.
"""
