"""The analysis: parse the lines, count them per window and scope, fire the rules against the
learned thresholds, write alerts and dead letters (the streaming analyzer), and learn those
thresholds from past logs (the threshold batch job)."""
