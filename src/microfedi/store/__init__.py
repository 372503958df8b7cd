"""SQLite storage: connections, migrations and the queries the package runs."""
