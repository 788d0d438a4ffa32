"""The box's one control interface (the controller) and the services on it:
pedalboards, snapshots and the setlist.
"""
