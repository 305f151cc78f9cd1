// Built with Embedded Swift (see Package.swift): new-inject starts once per
// message. The other files here are symbolic links to the library files it shares.
import CShims

@main
enum NewInject {
    static func main() { exit(NewInjectCommandLine.main()) }
}
