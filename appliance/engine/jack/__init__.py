"""JACK itself: the server, the box's wiring client, the graph both engines stand on, the dry path."""
