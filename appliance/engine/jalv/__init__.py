"""The jalv engine: each plugin a jalv process, chained by JACK connections."""
