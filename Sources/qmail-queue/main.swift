QmailQueueMain.run()
