"""Small helpers with no knowledge of models or graphs: exact JSON I/O and atomic writes
(`jsonio`), a picklable lazily cached property (`lazy`). Every layer may import them."""
