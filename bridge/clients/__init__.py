"""The only code that speaks HTTP to GHL or Instantly: the two clients, their errors,
and the pacing they share."""
