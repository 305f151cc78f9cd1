// Built with Embedded Swift (see Package.swift), like qmail-inject, whose code it
// shares through the symbolic links in this folder.
import CShims

@main
enum Sendmail {
    static func main() { exit(InjectCommandLine.main(.sendmail)) }
}
