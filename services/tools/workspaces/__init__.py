"""A tool call's workspace, the one folder file-touching tools may use: whose it is (tenancy.py: a folder per user,
or one shared), how a caller's path in it is checked as text (paths.py) and opened without following any link
(beneath.py), and its quota and the lock its writers hold (quota.py). Used by the tool workers (each call's
workspace) and by the file_io plugin (everything else)."""
