"""bms's exit status: one code per class of error (README "Troubleshooting",
``bms --help``).  The numbers are the BSD sysexits ones; systemd's
``RestartPreventExitStatus=`` lists the classes a restart cannot cure."""

from __future__ import annotations

from typing import Final

OK: Final = 0
USAGE: Final = 2  # a bad command line (argparse's own code)
UNAVAILABLE: Final = 69  # the milter socket or metrics address cannot be listened on,
#                          or another bms holds the pidfile: a restart may cure it
SOFTWARE: Final = 70  # the daemon failed while serving
NOPERM: Final = 77  # a user switch or socket owner change that needs root
CONFIG: Final = 78  # the configuration, access file, templates, users, directories

HELP: Final = (
    "exit status: 0 ok; 2 bad command line; 69 cannot listen on the socket or metrics "
    "address, or another bms holds the pidfile; 70 failed while serving; 77 needs root "
    "(user switch, socket owner); 78 configuration error (config file, access file, "
    "templates, users and groups, directories)")
