complete -c mictop -l root -d 'Directory all card paths are resolved under [env: MIC_ROOT; default /]' -r -F
complete -c mictop -l interval -d 'How often the card log and boot progress are read (500ms, 2s, ...)' -r
complete -c mictop -l config -d 'Configuration file, read again whenever it is saved [default: $XDG_CONFIG_HOME/mictop/config.toml]' -r -F
complete -c mictop -l demo-cards -d 'Number of emulated cards for --demo' -r
complete -c mictop -l no-mouse -d 'Do not capture the mouse (keeps the terminal\'s own selection)'
complete -c mictop -l demo -d 'Start emulated cards (micemu, in-process) under a temporary root and an mpssd for them (their consoles, network and disks; its network in a namespace of its own), boot them and watch them; c attaches a card\'s console through mpssd\'s broker. Quitting tears it all down. Needs FUSE'
complete -c mictop -s h -l help -d 'Print help'
complete -c mictop -s V -l version -d 'Print version'
