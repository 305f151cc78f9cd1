QueueFixMain.run()
