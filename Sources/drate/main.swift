DrateMain.run()
