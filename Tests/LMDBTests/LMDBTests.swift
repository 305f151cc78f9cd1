import XCTest
import LMDB
import TestSupport

final class LMDBTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = TestEnv.temporaryDirectory("lmdb") }
    override func tearDown() { TestEnv.remove(dir) }

    func testPutGetDeleteAndPersistAcrossReopen() throws {
        do {
            let env = try LMDBEnvironment(path: dir)
            let db = try env.database("schedule")
            try env.write { txn in
                try txn.put(db, Array("a".utf8), [1, 2, 3])
                try txn.put(db, Array("b".utf8), [4])
            }
            XCTAssertEqual(try env.read { try $0.get(db, Array("a".utf8)) }, [1, 2, 3])
            XCTAssertEqual(try env.write { try $0.delete(db, Array("b".utf8)) }, true)
            XCTAssertEqual(try env.write { try $0.delete(db, Array("b".utf8)) }, false)
            XCTAssertNil(try env.read { try $0.get(db, Array("b".utf8)) })
        }
        let env = try LMDBEnvironment(path: dir)
        let db = try env.database("schedule", create: false)
        XCTAssertEqual(try env.read { try $0.get(db, Array("a".utf8)) }, [1, 2, 3])
        XCTAssertEqual(try env.count(db), 1)
    }

    func testThrowingWriteTransactionIsAborted() throws {
        struct Boom: Error {}
        let env = try LMDBEnvironment(path: dir)
        let db = try env.database("x")
        XCTAssertThrowsError(try env.write { txn in
            try txn.put(db, [1], [1])
            throw Boom()
        })
        XCTAssertNil(try env.read { try $0.get(db, [1]) })
    }

    func testCursorIteratesInKeyOrderFromAStartKey() throws {
        let env = try LMDBEnvironment(path: dir)
        let db = try env.database("ordered")
        try env.write { txn in
            for k: UInt8 in [5, 1, 3, 9, 7] { try txn.put(db, [k], [k * 2]) }
        }
        var all: [UInt8] = []
        try env.read { txn in try txn.forEach(db) { k, _ in all.append(k[0]); return true } }
        XCTAssertEqual(all, [1, 3, 5, 7, 9])
        var from4: [UInt8] = []
        try env.read { txn in try txn.forEach(db, from: [4]) { k, v in from4.append(v[0]); return k[0] < 7 } }
        XCTAssertEqual(from4, [10, 14])
    }

    /// A long-lived reader sees its snapshot until it is refreshed, then the newest.
    func testReaderKeepsItsSnapshotUntilRefreshed() throws {
        let env = try LMDBEnvironment(path: dir)
        let db = try env.database("d")
        try env.write { try $0.put(db, Array("k".utf8), Array("1".utf8)) }
        let reader = try LMDBReader(env)
        XCTAssertEqual(try reader.transaction.get(db, Array("k".utf8)), Array("1".utf8))
        try env.write { try $0.put(db, Array("k".utf8), Array("2".utf8)) }
        XCTAssertEqual(try reader.transaction.get(db, Array("k".utf8)), Array("1".utf8))
        try reader.refresh()
        XCTAssertEqual(try reader.transaction.get(db, Array("k".utf8)), Array("2".utf8))
    }

    func testMissingDatabaseAndFullMapAreErrors() throws {
        var options = LMDBEnvironment.Options()
        options.mapSize = 64 * 1024
        let env = try LMDBEnvironment(path: dir, options: options)
        XCTAssertThrowsError(try env.database("absent", create: false)) { e in
            XCTAssertTrue("\(e)".contains("mdb_dbi_open"))
        }
        let db = try env.database("big")
        XCTAssertThrowsError(try env.write { txn in
            for i in 0..<10_000 { try txn.put(db, Array("key\(i)".utf8), [UInt8](repeating: 7, count: 100)) }
        }) { e in
            XCTAssertTrue((e as? LMDBError)?.isMapFull ?? false, "\(e)")
        }
        // The failed transaction left nothing behind; the environment still works.
        XCTAssertEqual(try env.count(db), 0)
        try env.write { try $0.put(db, [1], [2]) }
        XCTAssertEqual(try env.count(db), 1)
    }

    func testOpeningANonDirectoryFails() throws {
        XCTAssertThrowsError(try LMDBEnvironment(path: dir + "/does/not/exist"))
    }
}
