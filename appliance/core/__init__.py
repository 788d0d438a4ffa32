"""The pure core: the wire protocol, the board and its rules, plugin controls,
pedalboards. No I/O, no asyncio.
"""
