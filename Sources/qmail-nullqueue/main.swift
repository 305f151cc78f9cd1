NullQueueMain.run()
