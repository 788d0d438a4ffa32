"""The pedalboard box: LV2 plugins on JACK or Carla, driven over WebSocket."""

__version__ = "0.1.0"
