"""What drives the controller: phones (WebSocket and the UI), GPIO encoders and
footswitches, the HAT's mixer, meters and the tuner.
"""
