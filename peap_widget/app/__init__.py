"""Layer 11, app: the main job end to end (`discover`), its offline HTML report (`report`) and
the ``peap`` command line (`cli`)."""
