"""Small, complete examples on real data (sklearn's digits) used by the demo, notebooks and tests."""
