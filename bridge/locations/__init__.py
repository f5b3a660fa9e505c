"""Many GHL sub-accounts (locations) in one bridge: which locations and Instantly workspaces
there are, where each event goes, and the tokens that reach them."""
