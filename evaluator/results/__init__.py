"""Results across programs: the leaderboard (`leaderboard`), paired comparisons (`compare`) and the
`leaderboard`, `compare`, `report` and `promote` commands (`cli`)."""
