"""Partner formats: each referrer's own export, parsed leniently at the edge."""
