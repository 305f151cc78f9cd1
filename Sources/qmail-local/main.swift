QmailLocalMain.run()
