// Built with Embedded Swift (see Package.swift): qmail-inject starts once per
// message. The other files here are symbolic links to the library files it shares.
import CShims

@main
enum QmailInject {
    static func main() { exit(InjectCommandLine.main(.qmailInject)) }
}
