"""Models, the one training loop, the once-per-study preparation and the trial that uses them."""
