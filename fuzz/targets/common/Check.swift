// Shared by every fuzz target (fuzz/build compiles it into each).
// `precondition` drops its message in -O builds; a failed property must say what it saw.
func check(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #file, line: UInt = #line) {
    if !condition { fatalError("fuzz property failed: " + message(), file: file, line: line) }
}

