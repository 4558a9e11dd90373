"""Legacy bench scripts beside the new benches: every bus table of the rig is a link of the
legacy `cmd_tcp` / `cmd_serial` functions by its table name (the hil plugin provides that for
every test; nothing to set up here)."""
