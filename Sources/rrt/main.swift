RRTMain.run()
