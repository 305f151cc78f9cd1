// Fuzz target: indimail's rate expression language (RateControl/RateExpression.swift):
//   RateExpression.evaluate (the recursive-descent parser and evaluator:
//   numbers, $hex, operators, comparisons, bit operations, assignments, `;`,
//   functions, variables read from the environment) and
//   RateExpression.leadingNumber (the environment value's number).
// FUZZ_RATE=12.5abc and FUZZ_HEX=$ff are set so the environment path is reachable.
// Property: evaluate returns a finite number or throws; it never traps.
#if canImport(Glibc)
import Glibc
#endif
@testable import RateControl

nonisolated(unsafe) var ready = false

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if !ready { setenv("FUZZ_RATE", "12.5abc", 1); setenv("FUZZ_HEX", "$ff", 1); ready = true }
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    if let v = try? RateExpression(String(decoding: bytes, as: UTF8.self)).evaluate() {
        check(v.isFinite, "evaluate returned \(v)")
    }
    _ = RateExpression.leadingNumber(bytes)
    return 0
}
