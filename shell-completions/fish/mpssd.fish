complete -c mpssd -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware, etc/mpss, run/mpssd, var/lib/mpssd); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c mpssd -l config -d 'The configuration file [default: DIR/etc/mpss/mpssd.toml; a missing default file means the built-in defaults]' -r -F
complete -c mpssd -l metrics -d 'Serve Prometheus metrics at ADDR (e.g. 127.0.0.1:9464); loopback only unless metrics.allow_remote; metrics.enabled = false turns it off' -r
complete -c mpssd -l check-config -d 'Check the configuration file and exit: 0 if valid, 4 (with the file, line and key named) if not'
complete -c mpssd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mpssd -s V -l version -d 'Print version'
