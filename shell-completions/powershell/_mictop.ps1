
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'mictop' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'mictop'
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
        'mictop' {
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under [env: MIC_ROOT; default /]')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'How often the card log and boot progress are read (500ms, 2s, ...)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file, read again whenever it is saved [default: $XDG_CONFIG_HOME/mictop/config.toml]')
            [CompletionResult]::new('--demo-cards', '--demo-cards', [CompletionResultType]::ParameterName, 'Number of emulated cards for --demo')
            [CompletionResult]::new('--no-mouse', '--no-mouse', [CompletionResultType]::ParameterName, 'Do not capture the mouse (keeps the terminal''s own selection)')
            [CompletionResult]::new('--demo', '--demo', [CompletionResultType]::ParameterName, 'Start emulated cards (micemu, in-process) under a temporary root and an mpssd for them (their consoles, network and disks; its network in a namespace of its own), boot them and watch them; c attaches a card''s console through mpssd''s broker. Quitting tears it all down. Needs FUSE')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
