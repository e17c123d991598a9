"""Local mode: the same engine, evaluator contract and store on one machine."""
