#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import ControlFiles

/// qmail-newmrh: builds `morercpthosts.cdb` from `morercpthosts` in the
/// control folder: each line lower-cased, trailing blanks and `#` lines
/// dropped, the line the key and the value empty; written to a `.tmp` file,
/// synced and renamed, so qmail-smtpd sees the old file or the new one.
public enum NewMRH {
    public static func main(_ args: [String]) -> Int32 {
        if args.first == "--help" || args.first == "-h" {
            _ = try? Sys.write(1, """
                usage: qmail-newmrh
                Builds $CONTROLDIR/morercpthosts.cdb from $CONTROLDIR/morercpthosts (docs/man/qmail-newmrh.8.md).

                """)
            return 0
        }
        let control = ControlDirectory.fromEnvironment()
        let lines: [String]
        do {
            guard let l = try control.readLines("morercpthosts") else {
                _ = try? Sys.write(2, "qmail-newmrh: fatal: unable to read \(control.filePath("morercpthosts")): file does not exist\n")
                return 111
            }
            lines = l
        } catch {
            _ = try? Sys.write(2, "qmail-newmrh: fatal: unable to read controls: \(error)\n")
            return 111
        }
        do throws(SystemError) {
            try CdbWriter.build(control.filePath("morercpthosts.cdb"), entries: lines.map { (Array($0.lowercased().utf8), []) })
        } catch {
            _ = try? Sys.write(2, "qmail-newmrh: fatal: unable to write \(control.filePath("morercpthosts.cdb")): \(error.reason)\n")
            return 111
        }
        return 0
    }
}
