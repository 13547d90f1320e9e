
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'micemu' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'micemu'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'micemu' {
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Root directory to serve (sys/, lib/firmware/, run/ are created in it)')
            [CompletionResult]::new('--cards', '--cards', [CompletionResultType]::ParameterName, 'Number of cards (1-256)')
            [CompletionResult]::new('--memory', '--memory', [CompletionResultType]::ParameterName, 'GDDR per card (K, M, G suffixes; at least 256M)')
            [CompletionResult]::new('--timing', '--timing', [CompletionResultType]::ParameterName, 'Timing preset')
            [CompletionResult]::new('--reset-ms', '--reset-ms', [CompletionResultType]::ParameterName, 'Override the reset duration in milliseconds')
            [CompletionResult]::new('--boot-ms', '--boot-ms', [CompletionResultType]::ParameterName, 'Override the boot duration (bootstrap to init) in milliseconds')
            [CompletionResult]::new('--ack-ms', '--ack-ms', [CompletionResultType]::ParameterName, 'Override the virtio handshakes'' budget (used rings, config change, removal, device reset) in milliseconds')
            [CompletionResult]::new('--device-id', '--device-id', [CompletionResultType]::ParameterName, 'PCI device IDs handed out in turn (hex), e.g. 2250,225d')
            [CompletionResult]::new('--stepping', '--stepping', [CompletionResultType]::ParameterName, 'Steppings handed out in turn: A0, B0, B1, C0 or a hex revision')
            [CompletionResult]::new('--log-buf-len', '--log-buf-len', [CompletionResultType]::ParameterName, 'Size of the card kernel log buffer (power of two, 4K-16M)')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'micemu''s own log lines on stderr (what the host driver would log): off, error, warn, info, debug or trace')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Unmount a dead FUSE mount a killed micemu left at DIR/sys (only one the kernel proves dead: Transport endpoint is not connected)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('inject', 'inject', [CompletionResultType]::ParameterValue, 'Inject a fault into, or act inside, a running emulated card')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'micemu;inject' {
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Root directory of the running micemu')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'micemu;help' {
            [CompletionResult]::new('inject', 'inject', [CompletionResultType]::ParameterValue, 'Inject a fault into, or act inside, a running emulated card')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'micemu;help;inject' {
            break
        }
        'micemu;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
