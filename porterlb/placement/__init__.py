"""Which node announces each LoadBalancer IP: eligibility and choice, over plain data."""
