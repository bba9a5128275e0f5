"""``skip_unchanged``: skip nodes whose code, parameters and input data did not change.

* :mod:`.fingerprint`: fingerprints of node code, values and files;
* :mod:`.storage`: where fingerprints and cached results live (``prefect.yml`` ``cache:``);
* :mod:`.skip`: the per-run logic (cache keys of node tasks, records, the execution wrapper).
"""
