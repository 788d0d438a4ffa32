"""What the box keeps on its data partition: the board, the pedalboards, atomic files."""
