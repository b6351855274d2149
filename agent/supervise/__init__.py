"""The servers kvwatch runs: their processes, states, raw logs, and what the host tells about them."""
